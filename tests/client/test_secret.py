"""``remotecell.Secret``: the notebook's constructors, and what they put on the wire."""

from __future__ import annotations

import pickle
from pathlib import Path

import dill
import pytest

import remotecell
from remotecell.client.secret import Secret, read_dotenv
from remotecell.contract import values
from remotecell.contract.errors import ClosureError, ConfigError

VALUE = "hf_Zq81xLmn0pQrsTuvWxyz"


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_exported_from_the_package() -> None:
    assert "Secret" in remotecell.__all__
    assert remotecell.Secret is Secret


def test_from_name_refers_to_a_stored_secret() -> None:
    hf = Secret.from_name("hf", required_keys=["HF_TOKEN"])
    assert hf.name == "hf" and repr(hf) == "Secret.from_name('hf')"
    ref = hf.to_proto()
    assert (ref.name, ref.adhoc, dict(ref.env), list(ref.required_keys)) == (
        "hf",
        False,
        {},
        ["HF_TOKEN"],
    )
    assert Secret.from_name("hf") == Secret.from_name("hf")
    # a stored secret is only a name: it may travel as a cell variable
    assert pickle.loads(pickle.dumps(Secret.from_name("hf"))) == Secret.from_name("hf")


@pytest.mark.parametrize("name", ["", "with space", "-x", "x" * 65, "a/b", 3, None])
def test_invalid_names_are_one_sentence(name: object) -> None:
    with pytest.raises(ConfigError) as err:
        Secret.from_name(name)  # type: ignore[arg-type]
    assert "is not a valid secret name: use 1-64 letters" in one_line(err)


def test_required_keys_must_be_variable_names() -> None:
    with pytest.raises(ConfigError, match="required_keys must be environment variable names"):
        Secret.from_name("hf", required_keys=["not a key"])


def test_from_dict_carries_its_values_and_never_shows_them() -> None:
    secret = Secret.from_dict({"API_TOKEN": VALUE, "USER": "me"})
    assert repr(secret) == "Secret.from_dict(keys=['API_TOKEN', 'USER'])"
    assert VALUE not in repr(secret) and VALUE not in str(secret)
    assert secret.keys == ["API_TOKEN", "USER"]
    ref = secret.to_proto()
    assert ref.adhoc and ref.name == "from_dict" and dict(ref.env)["API_TOKEN"] == VALUE


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "has no variables"),
        ({"1X": VALUE}, "is not an environment variable name"),
        ({"X": 5}, "secret values must be strings"),
        ({"X": "a\0" + VALUE}, "contains a NUL character"),
        ([("X", VALUE)], "must be a dict of variable names to strings"),
    ],
)
def test_from_dict_rejects_bad_input_without_echoing_values(env: object, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        Secret.from_dict(env)  # type: ignore[arg-type]
    assert expected in one_line(err)
    assert VALUE not in str(err.value)


def test_an_adhoc_secret_is_not_sent_as_a_cell_variable() -> None:
    secret = Secret.from_dict({"API_TOKEN": VALUE})
    for dump in (pickle.dumps, dill.dumps):
        with pytest.raises(TypeError, match="is not sent as a variable"):
            dump(secret)
    with pytest.raises(ClosureError) as err:
        values.pack({"creds": secret})
    assert "`creds`" in str(err.value) and VALUE not in str(err.value)


def test_from_dotenv(tmp_path: Path) -> None:
    file = tmp_path / "creds.env"
    file.write_text(
        "# a comment\n"
        f"export API_TOKEN={VALUE}\n"
        "QUOTED='two words'\n"
        'MULTI="line one\\nline two"\n'
        "DERIVED=${QUOTED}-x\n"
    )
    secret = Secret.from_dotenv(file)
    assert repr(secret) == "Secret.from_dotenv(keys=['API_TOKEN', 'DERIVED', 'MULTI', 'QUOTED'])"
    env = dict(secret.to_proto().env)
    assert env == {
        "API_TOKEN": VALUE,
        "QUOTED": "two words",
        "MULTI": "line one\nline two",
        "DERIVED": "two words-x",
    }
    assert secret.to_proto().name == "from_dotenv(creds.env)"


def test_from_dotenv_errors_name_the_line_not_its_content(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Secret.from_dotenv(tmp_path / "missing.env")
    assert "no dotenv file at" in one_line(err)
    bad = tmp_path / "bad.env"
    bad.write_text(f"GOOD=1\n{VALUE} is not an assignment\n")
    with pytest.raises(ConfigError) as err:
        Secret.from_dotenv(bad)
    assert one_line(err) == f"line 2 of {bad} is not KEY=VALUE; fix or remove it"
    with pytest.raises(ConfigError) as err:
        read_dotenv(text="BARE\n")
    assert one_line(err) == "BARE in the input has no value; write it as BARE=VALUE"


def test_secret_objects_are_made_by_the_constructors_only() -> None:
    with pytest.raises(TypeError, match=r"Secret\.from_name"):
        Secret()
