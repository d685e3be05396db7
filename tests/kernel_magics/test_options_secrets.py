"""The ``secrets=`` option of ``%%remote`` (``_options.parse``)."""

from __future__ import annotations

import pytest

from remotecell.client.secret import Secret
from remotecell.contract.errors import ConfigError
from remotecell.kernel_magics._options import parse

VALUE = "hf_Zq81xLmn0pQrsTuvWxyz"


def error(line: str, **ns: object) -> str:
    with pytest.raises(ConfigError) as err:
        parse(line, dict(ns))
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_a_list_of_secrets_from_the_notebook() -> None:
    hf = Secret.from_name("hf")
    adhoc = Secret.from_dict({"API_TOKEN": VALUE})
    options = parse("secrets=[hf, adhoc] timeout=5", {"hf": hf, "adhoc": adhoc})
    assert options.secrets == [hf, adhoc]
    assert parse("secrets=(hf,)", {"hf": hf}).secrets == [hf]
    assert parse("secrets=hf", {"hf": hf}).secrets == [hf]  # one on its own
    assert parse("secrets=[hf, hf]", {"hf": hf}).secrets == [hf]
    assert parse("secrets=[]", {}).secrets == []
    assert parse("", {}).secrets == []


def test_the_constructor_may_be_written_in_the_line() -> None:
    import remotecell

    options = parse('secrets=[remotecell.Secret.from_name("hf")]', {"remotecell": remotecell})
    assert options.secrets == [Secret.from_name("hf")]


def test_a_name_instead_of_a_secret_says_how_to_make_one() -> None:
    message = error('secrets=["hf"]')
    assert message == (
        'bad value for %%remote option secrets=["hf"]: it holds a string; name a stored '
        'secret with remotecell.Secret.from_name("NAME")'
    )
    # a string held in a variable may be a value itself: it is never shown
    assert VALUE not in error("secrets=[token]", token=VALUE)


@pytest.mark.parametrize("value", ["{'A': 'b'}", "None", "[1]", "'hf'"])
def test_other_values_are_one_sentence_naming_what_is_valid(value: str) -> None:
    message = error(f"secrets={value}")
    assert message.startswith(f"bad value for %%remote option secrets={value}")
    assert "expected a list of remotecell.Secret" in message or "it holds a string" in message


def test_an_invalid_secret_name_fails_while_the_line_is_parsed() -> None:
    message = error('secrets=[Secret.from_name("bad name")]', Secret=Secret)
    assert "is not a valid secret name" in message
    assert message.startswith("%%remote option secrets=")
