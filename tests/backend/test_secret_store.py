"""Stored secrets (``backend/secrets/store.py``) and a job's secret references (``refs.py``)."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from remotecell._proto import pb
from remotecell.backend.secrets import refs
from remotecell.backend.secrets.store import SecretStore, SecretStoreError
from remotecell.backend.state.store import Store
from remotecell.contract.errors import ConfigError

VALUE = "hf_Zq81xLmn0pQrsTuvWxyz"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


@pytest.fixture
def store(db: Path):
    s = SecretStore(db)
    yield s
    s.close()


def all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_values_are_encrypted_at_rest_and_the_key_is_private(store: SecretStore, db: Path) -> None:
    assert not store.key_path.exists()  # made with the first secret
    record, replaced = store.create("hf", {"HF_TOKEN": VALUE, "HF_USER": "someone-else"})
    assert not replaced and record.keys == ("HF_TOKEN", "HF_USER")
    assert store.key_path == db.parent / "secrets.key"
    assert store.key_path.stat().st_mode & 0o777 == 0o600
    assert store.values("hf") == {"HF_TOKEN": VALUE, "HF_USER": "someone-else"}
    # the database (and its WAL) hold neither the value nor its base64
    stored = all_bytes(db.parent)
    for form in (VALUE.encode(), base64.b64encode(VALUE.encode()), b"someone-else"):
        assert form not in stored
    # other processes read the same (a second store, as a restarted control plane)
    again = SecretStore(db)
    assert again.values("hf")["HF_TOKEN"] == VALUE
    again.close()


def test_the_secrets_table_lives_beside_the_jobs(store: SecretStore, db: Path) -> None:
    jobs = Store(db)
    store.create("hf", {"HF_TOKEN": VALUE})
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"jobs", "events", "secrets"} <= tables
    jobs.close()


def test_listing_shows_names_keys_and_times_never_values(store: SecretStore) -> None:
    store.create("b-secret", {"B": VALUE})
    store.create("a.secret", {"Z": "zzzz-value", "A": "aaaa-value"})
    records = store.records()
    assert [r.name for r in records] == ["a.secret", "b-secret"]
    assert records[0].keys == ("A", "Z")
    assert VALUE not in repr(records) and "aaaa-value" not in repr(records)
    assert store.record("a.secret") == records[0]
    assert store.record("nope") is None


def test_create_refuses_an_existing_name_unless_overwriting(store: SecretStore) -> None:
    first, _ = store.create("hf", {"HF_TOKEN": "old-value"})
    with pytest.raises(SecretStoreError) as err:
        store.create("hf", {"HF_TOKEN": VALUE})
    assert "exists already" in one_line(err) and "--force" in str(err.value)
    assert store.values("hf") == {"HF_TOKEN": "old-value"}
    second, replaced = store.create("hf", {"OTHER": VALUE}, overwrite=True)
    assert replaced
    assert second.created == first.created and second.updated >= first.updated
    assert store.values("hf") == {"OTHER": VALUE}


def test_delete(store: SecretStore) -> None:
    store.create("hf", {"HF_TOKEN": VALUE})
    assert store.delete("hf")
    assert not store.delete("hf")
    with pytest.raises(SecretStoreError) as err:
        store.values("hf")
    assert one_line(err).startswith("no secret named 'hf' on this control plane")


@pytest.mark.parametrize(
    ("name", "env", "expected"),
    [
        ("", {"A": "x"}, "is not a valid secret name"),
        ("has space", {"A": "x"}, "is not a valid secret name"),
        ("-dash-first", {"A": "x"}, "is not a valid secret name"),
        ("x" * 65, {"A": "x"}, "is not a valid secret name"),
        ("ok", {}, "has no variables"),
        ("ok", {"1ABC": "x"}, "is not an environment variable name"),
        ("ok", {"A=B": "x"}, "is not an environment variable name"),
        ("ok", {"A": 1}, "secret values must be strings"),
        ("ok", {"A": "x\0y"}, "contains a NUL character"),
        ("ok", {"A": "x" * 70000}, "larger than 64 KiB"),
    ],
)
def test_bad_names_keys_and_values_are_one_sentence_naming_no_value(
    store: SecretStore, name: str, env: dict, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        store.create(name, env)
    message = one_line(err)
    assert expected in message
    for value in env.values():
        if isinstance(value, str) and len(value) > 1:
            assert value not in message


def test_a_key_file_others_can_read_is_refused(store: SecretStore) -> None:
    store.create("hf", {"HF_TOKEN": VALUE})
    store.key_path.chmod(0o644)
    fresh = SecretStore(store.path)
    with pytest.raises(SecretStoreError) as err:
        fresh.values("hf")
    message = one_line(err)
    assert "can be read by other users (mode 0644)" in message
    assert f"chmod 600 {store.key_path}" in message
    with pytest.raises(SecretStoreError):
        fresh.create("other", {"A": VALUE})
    store.key_path.chmod(0o600)
    assert fresh.values("hf")["HF_TOKEN"] == VALUE
    fresh.close()


def test_a_wrong_key_or_altered_data_is_a_clear_error(store: SecretStore, db: Path) -> None:
    store.create("hf", {"HF_TOKEN": VALUE})
    store.create("other", {"OTHER": "other-value"})
    # another key
    original = store.key_path.read_bytes()
    store.key_path.write_bytes(Fernet.generate_key())
    wrong = SecretStore(db)
    with pytest.raises(SecretStoreError) as err:
        wrong.values("hf")
    assert one_line(err).startswith("secret 'hf' cannot be decrypted with the key in")
    assert "remotecell secret create hf KEY=VALUE... --force" in str(err.value)
    wrong.close()
    store.key_path.write_bytes(original)
    # a flipped byte in the stored token
    raw = sqlite3.connect(db, isolation_level=None)
    (token,) = raw.execute("SELECT token FROM secrets WHERE name = 'hf'").fetchone()
    altered = bytearray(token)
    altered[40] ^= 0x01
    raw.execute("UPDATE secrets SET token = ? WHERE name = 'hf'", (bytes(altered),))
    with pytest.raises(SecretStoreError, match="cannot be decrypted"):
        SecretStore(db).values("hf")
    # a valid token moved from another row does not pass as this one
    raw.execute(
        "UPDATE secrets SET token = (SELECT token FROM secrets WHERE name = 'other')"
        " WHERE name = 'hf'"
    )
    with pytest.raises(SecretStoreError, match="cannot be decrypted"):
        SecretStore(db).values("hf")
    raw.close()


def test_a_missing_key_file_with_stored_secrets_is_a_clear_error(store: SecretStore) -> None:
    store.create("hf", {"HF_TOKEN": VALUE})
    store.key_path.unlink()
    fresh = SecretStore(store.path)
    for attempt in (lambda: fresh.values("hf"), lambda: fresh.create("new", {"A": VALUE})):
        with pytest.raises(SecretStoreError) as err:
            attempt()
        assert "is missing, so the 1 stored secret(s) cannot be read" in one_line(err)
    assert not store.key_path.exists()  # no new key that would orphan the old secrets
    fresh.close()


def test_a_key_file_that_holds_no_key_is_a_clear_error(store: SecretStore) -> None:
    fd = os.open(store.key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(SecretStoreError) as err:
        store.create("hf", {"HF_TOKEN": VALUE})
    assert "does not hold a valid key" in one_line(err)


# -- a job's references -------------------------------------------------------------------


def spec_with(*secrets: pb.SecretRef) -> pb.JobSpec:
    return pb.JobSpec(code="1", secrets=list(secrets))


def test_adhoc_values_are_taken_out_of_the_spec_before_it_is_stored(store: SecretStore) -> None:
    store.create("hf", {"HF_TOKEN": VALUE, "SHARED": "from-hf"})
    spec = spec_with(
        pb.SecretRef(name="hf", required_keys=["HF_TOKEN"]),
        pb.SecretRef(name="from_dict", adhoc=True, env={"SHARED": "from-dict", "X": "adhoc-x"}),
    )
    adhoc = refs.take_adhoc(spec, store)
    assert adhoc == {1: {"SHARED": "from-dict", "X": "adhoc-x"}}
    assert b"adhoc-x" not in spec.SerializeToString()
    assert spec.secrets[1].adhoc and spec.secrets[1].name == "from_dict"
    # merged in the job's order: the later secret wins a shared key
    env = refs.environment(spec, adhoc, store)
    assert env == {"HF_TOKEN": VALUE, "SHARED": "from-dict", "X": "adhoc-x"}
    # after a restart the ad-hoc values are gone: the job cannot run with them
    assert refs.needs_adhoc(spec)
    with pytest.raises(refs.SecretsUnavailable) as err:
        refs.environment(spec, {}, store)
    assert "run the cell again" in one_line(err)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (pb.SecretRef(name="nope"), "no secret named 'nope' on this control plane; create it"),
        (pb.SecretRef(name="bad name"), "is not a valid secret name"),
        (pb.SecretRef(name="hf", required_keys=["HF_USER"]), "secret 'hf' has no key HF_USER"),
        (pb.SecretRef(name="hf", env={"A": "b"}), "came with values"),
        (pb.SecretRef(name="d", adhoc=True, env={"9X": VALUE}), "not an environment variable"),
    ],
)
def test_bad_references_fail_at_submit(
    store: SecretStore, ref: pb.SecretRef, expected: str
) -> None:
    store.create("hf", {"HF_TOKEN": VALUE})
    with pytest.raises(ConfigError) as err:
        refs.take_adhoc(spec_with(ref), store)
    assert expected in one_line(err)
    assert VALUE not in str(err.value)


def test_a_secret_removed_after_submit_fails_the_task_clearly(store: SecretStore) -> None:
    store.create("hf", {"HF_TOKEN": VALUE})
    spec = spec_with(pb.SecretRef(name="hf"))
    refs.take_adhoc(spec, store)
    store.delete("hf")
    with pytest.raises(refs.SecretsUnavailable) as err:
        refs.environment(spec, {}, store)
    assert one_line(err).startswith("no secret named 'hf'")
