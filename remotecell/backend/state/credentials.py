"""Who may call the control plane: users with their tokens, and runners with theirs.

A token is 256 random bits, shown once when it is made; the database keeps only its
SHA-256 (a fast hash is enough for random secrets of that size: nothing to brute-force).
A user's token acts as that user; an admin user may also make and revoke tokens. A
runner's credential is minted when the control plane starts the runner and dropped when
it exits: it names that runner, the user it serves and the volumes mounted in it, and
grants nothing else (``backend/auth.py`` enforces what each may call).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from remotecell.backend.state import owned
from remotecell.backend.state.schema import open_database
from remotecell.contract.errors import ConfigError
from remotecell.contract.users import check_user_name


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user, or a runner serving a user."""

    user: str
    admin: bool = False
    #: Set for a runner's credential: it acts as this runner only.
    runner_id: str = ""
    #: A runner's mounted volumes (by name): the only ones its credential reaches.
    volumes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_runner(self) -> bool:
        return bool(self.runner_id)


@dataclass(frozen=True)
class UserRow:
    name: str
    admin: bool
    created: float
    tokens: int


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class CredentialStore:
    """The users and the hashes of their tokens and of runners' credentials."""

    def __init__(self, path: Path) -> None:
        self._db = open_database(path)

    def close(self) -> None:
        self._db.close()

    # -- users ----------------------------------------------------------------------

    def create_token(self, user: str, admin: bool = False) -> str:
        """A new token for ``user`` (made if new; ``admin`` makes it an admin); returns
        the token, which is kept only as its hash."""
        token = new_token()
        self.add_token(user, token, admin)
        return token

    def add_token(self, user: str, token: str, admin: bool = False) -> None:
        """Records ``token`` (its hash) for ``user``, made if new."""
        check_user_name(user)
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO users (name, admin, created) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET admin = MAX(admin, excluded.admin)",
                (user, int(admin), now),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO credentials (hash, user, runner_id, volumes, created)"
                " VALUES (?, ?, '', '', ?)",
                (token_hash(token), user, now),
            )

    def revoke(self, user: str) -> int:
        """Removes every token of ``user`` and the user; returns how many tokens went.

        Raises:
            ConfigError: there is no such user.
        """
        check_user_name(user)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            gone = self._db.execute(
                "DELETE FROM credentials WHERE user = ? AND runner_id = ''", (user,)
            ).rowcount
            found = self._db.execute("DELETE FROM users WHERE name = ?", (user,)).rowcount
        if not found:
            raise ConfigError(f"no user {user!r}: `remotecell token ls` lists them")
        return gone

    def has_user(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
        return row is not None

    def users(self) -> list[UserRow]:
        rows = self._db.execute(
            "SELECT u.name, u.admin, u.created,"
            " (SELECT COUNT(*) FROM credentials c WHERE c.user = u.name AND c.runner_id = '')"
            " FROM users u ORDER BY u.name"
        ).fetchall()
        return [UserRow(name, bool(admin), created, n) for name, admin, created, n in rows]

    def adopt_unowned(self, owner: str) -> None:
        """Gives ``owner`` what was made before there were users (``owned.adopt_unowned``)."""
        owned.adopt_unowned(self._db, owner)

    # -- runners --------------------------------------------------------------------

    def mint_runner(self, runner_id: str, user: str, volumes: frozenset[str]) -> str:
        """A credential for the runner ``runner_id``, serving ``user``."""
        token = new_token()
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO credentials (hash, user, runner_id, volumes, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), user, runner_id, ",".join(sorted(volumes)), time.time()),
            )
        return token

    def drop_runner(self, runner_id: str) -> None:
        """Ends the credential of a runner that has exited."""
        if runner_id:
            with self._db:
                self._db.execute("DELETE FROM credentials WHERE runner_id = ?", (runner_id,))

    # -- checking -------------------------------------------------------------------

    def lookup(self, token: str) -> Principal | None:
        """Who ``token`` belongs to; None for no one."""
        if not token or len(token) > 256:
            return None
        try:
            row = self._db.execute(
                "SELECT c.user, COALESCE(u.admin, 0), c.runner_id, c.volumes"
                " FROM credentials c LEFT JOIN users u ON u.name = c.user WHERE c.hash = ?",
                (token_hash(token),),
            ).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        user, admin, runner_id, volumes = row
        return Principal(
            user,
            admin=bool(admin) and not runner_id,
            runner_id=runner_id,
            volumes=frozenset(v for v in volumes.split(",") if v),
        )
