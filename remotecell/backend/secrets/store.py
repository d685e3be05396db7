"""Stored secrets, encrypted at rest, in the control plane's SQLite file (table ``secrets``).

Each row holds a secret's name and keys in clear (they are listed) and its values as
one Fernet token (AES-128-CBC with an HMAC-SHA256; ``cryptography``) of a JSON object
that also names the secret, so a token moved to another row does not decrypt as that
row's secret. The key is a file beside the database (``secrets.key``, mode 0600),
created when the first secret is stored; a key file that others may read, or that
belongs to another user, is refused. Without the key the values cannot be read, so it
is the one file to keep private (and to back up with the database).

Each user's secrets are their own: a secret is stored as ``OWNER/NAME``
(``state/owned.py``), and its owner may share it with another user by name. Calls that
give no owner use the bare name (a store outside a control plane).

Its own connection, like the image records (WAL): the store is used from the control
plane's event loop thread. The table is declared in ``state/schema.py``.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from remotecell.backend.state import owned
from remotecell.backend.state.schema import open_database
from remotecell.contract.errors import ConfigError
from remotecell.contract.secrets import check_env, check_name

KEY_FILE = "secrets.key"


class SecretStoreError(ConfigError):
    """A secret cannot be stored or read: it is missing, exists already, or the key
    file is missing, unsafe or not the key the secret was stored with."""


@dataclass(frozen=True)
class SecretRecord:
    """What may be shown of a secret: never its values."""

    name: str
    keys: tuple[str, ...]
    created: float
    updated: float
    owner: str = ""


def _record(stored: str, keys: str, created: float, updated: float) -> SecretRecord:
    return SecretRecord(
        owned.name_of(stored), tuple(json.loads(keys)), created, updated, owned.owner_of(stored)
    )


class SecretStore:
    """The ``secrets`` table of ``state.sqlite3`` and the key beside it.

    Args:
        path: the state database.
        key_path: the key file (default: ``secrets.key`` in the database's directory).
    """

    def __init__(self, path: Path, key_path: Path | None = None) -> None:
        self.path = path
        self.key_path = key_path or path.parent / KEY_FILE
        self._db = open_database(path)
        self._fernet: Fernet | None = None
        self.shares = owned.Shares(self._db)

    def close(self) -> None:
        self._db.close()

    # -- the key -----------------------------------------------------------------

    def _key(self, create: bool) -> Fernet:
        if self._fernet is not None:
            return self._fernet
        path = self.key_path
        if not path.exists():
            stored = self._count()
            if stored or not create:
                raise SecretStoreError(
                    f"the secrets key file {path} is missing, so the {stored} stored "
                    "secret(s) cannot be read; restore the file, or remove them "
                    "(`remotecell secret rm NAME`) and create them again"
                )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # made meanwhile by another process: use it
                pass
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(Fernet.generate_key())
                    f.flush()
                    os.fsync(f.fileno())
        info = path.stat()
        if info.st_uid != os.getuid():
            raise SecretStoreError(
                f"the secrets key file {path} belongs to another user (uid {info.st_uid}); "
                "it must be the control plane user's own file with mode 0600"
            )
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretStoreError(
                f"the secrets key file {path} can be read by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); make it private with "
                f"`chmod 600 {path}` and try again"
            )
        try:
            self._fernet = Fernet(path.read_bytes().strip())
        except (ValueError, OSError) as err:
            raise SecretStoreError(
                f"the secrets key file {path} does not hold a valid key ({err}); restore "
                "the original file"
            ) from None
        return self._fernet

    # -- secrets -----------------------------------------------------------------

    def create(
        self, name: str, env: dict[str, str], overwrite: bool = False, owner: str = ""
    ) -> tuple[SecretRecord, bool]:
        """Stores a secret; returns it and whether it replaced one of the same name.

        Raises:
            SecretStoreError: it exists and ``overwrite`` is false; the key is unusable.
            ConfigError: a bad name, key or value (messages name keys, never values).
        """
        check_name(name)
        env = check_env(env, f"secret {name!r}")
        fernet = self._key(create=True)
        token = fernet.encrypt(json.dumps({"name": name, "env": env}).encode())
        keys = json.dumps(sorted(env))
        now = time.time()
        stored = owned.stored(name, owner)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT created FROM secrets WHERE name = ?", (stored,)
            ).fetchone()
            if row is not None and not overwrite:
                raise SecretStoreError(
                    f"a secret named {name!r} exists already; pass --force "
                    "(overwrite=True) to replace it, or remove it first"
                )
            created = row[0] if row is not None else now
            self._db.execute(
                "INSERT OR REPLACE INTO secrets (name, keys, token, created, updated)"
                " VALUES (?, ?, ?, ?, ?)",
                (stored, keys, token, created, now),
            )
        return SecretRecord(name, tuple(sorted(env)), created, now, owner), row is not None

    def records(self, owner: str = "") -> list[SecretRecord]:
        """``owner``'s secrets and those shared with them (every one, with no owner)."""
        rows = self.shares.visible("secrets", "name, keys, created, updated", owned.SECRET, owner)
        return [_record(*row) for row in rows]

    def owner_for(self, user: str, name: str) -> str:
        """Whose secret ``name`` the user means (see ``owned.Shares.owner_for``)."""
        mine = self.record(name, user) is not None
        return self.shares.owner_for(owned.SECRET, user, name, mine)

    def record(self, name: str, owner: str = "") -> SecretRecord | None:
        row = self._db.execute(
            "SELECT name, keys, created, updated FROM secrets WHERE name = ?",
            (owned.stored(name, owner),),
        ).fetchone()
        return _record(*row) if row is not None else None

    def delete(self, name: str, owner: str = "") -> bool:
        """Removes a secret, and its shares; False when there was none of that name."""
        with self._db:
            cur = self._db.execute(
                "DELETE FROM secrets WHERE name = ?", (owned.stored(name, owner),)
            )
        if owner:
            self.shares.forget(owned.SECRET, owner, name)
        return cur.rowcount == 1

    def values(self, name: str, owner: str = "") -> dict[str, str]:
        """A secret's variables, decrypted.

        Raises:
            SecretStoreError: no such secret; the key is missing, unsafe or not the one
                it was stored with; its stored data was altered.
        """
        row = self._db.execute(
            "SELECT token FROM secrets WHERE name = ?", (owned.stored(name, owner),)
        ).fetchone()
        if row is None:
            raise SecretStoreError(missing_message(name))
        fernet = self._key(create=False)
        try:
            payload = json.loads(fernet.decrypt(bytes(row[0])))
        except (InvalidToken, ValueError):
            payload = None
        if not isinstance(payload, dict) or payload.get("name") != name:
            raise SecretStoreError(
                f"secret {name!r} cannot be decrypted with the key in {self.key_path} "
                "(another key, or its stored data was altered); create it again with "
                f"`remotecell secret create {name} KEY=VALUE... --force`"
            )
        return dict(payload["env"])

    def _count(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM secrets").fetchone()
        return int(n)


def missing_message(name: str) -> str:
    return (
        f"no secret named {name!r} on this control plane; create it with "
        f"`remotecell secret create {name} KEY=VALUE` (`remotecell secret ls` lists them)"
    )
