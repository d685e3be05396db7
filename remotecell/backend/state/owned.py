"""Things users own by name, secrets and volumes: how they are keyed, shared and found.

Each user's names are their own: a secret or volume is stored under ``OWNER/NAME``
(names hold no '/'). An owner may share one, by name, with another user explicitly
(``remotecell secret share``, ``remotecell volume share``). A name a user gives means
their own thing of that name, else the one thing of that name shared with them; one
shared by several owners is refused until only one shares it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from remotecell.contract.errors import ConfigError
from remotecell.contract.users import check_user_name

SECRET = "secret"
VOLUME = "volume"


def key(owner: str, name: str) -> str:
    """The stored key of ``owner``'s thing ``name``."""
    return f"{owner}/{name}"


def stored(name: str, owner: str) -> str:
    """The key ``name`` is stored under: ``owner``'s, or the bare name for no owner (a
    store used outside a control plane)."""
    return key(owner, name) if owner else name


def name_of(stored_as: str) -> str:
    return stored_as.rpartition("/")[2]


def owner_of(stored_as: str) -> str:
    return stored_as.rpartition("/")[0]


class Shares:
    """Who shares what with whom, over a connection to the state database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def share(self, kind: str, owner: str, name: str, grantee: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO shares (kind, owner, name, grantee, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, owner, name, grantee, time.time()),
            )

    def unshare(self, kind: str, owner: str, name: str, grantee: str) -> bool:
        with self._db:
            cur = self._db.execute(
                "DELETE FROM shares WHERE kind = ? AND owner = ? AND name = ? AND grantee = ?",
                (kind, owner, name, grantee),
            )
        return cur.rowcount > 0

    def change(
        self,
        kind: str,
        owner: str,
        name: str,
        grantee: str,
        revoke: bool,
        user_exists: Callable[[str], bool],
    ) -> list[str]:
        """Shares ``owner``'s thing ``name`` with ``grantee`` (``revoke``: stops sharing
        it), as a ShareSecret or ShareVolume asks; returns whom it is shared with now.

        Raises:
            ConfigError: a bad user name, the owner themself, or no such user.
        """
        check_user_name(grantee)
        if grantee == owner:
            raise ConfigError("you own it already: share it with another user")
        if revoke:
            self.unshare(kind, owner, name, grantee)
        elif not user_exists(grantee):
            raise ConfigError(f"no user {grantee!r}: `remotecell token ls` lists them")
        else:
            self.share(kind, owner, name, grantee)
        return self.grantees(kind, owner, name)

    def forget(self, kind: str, owner: str, name: str) -> None:
        """Ends every share of a thing that is gone."""
        with self._db:
            self._db.execute(
                "DELETE FROM shares WHERE kind = ? AND owner = ? AND name = ?", (kind, owner, name)
            )

    def grantees(self, kind: str, owner: str, name: str) -> list[str]:
        rows = self._db.execute(
            "SELECT grantee FROM shares WHERE kind = ? AND owner = ? AND name = ? ORDER BY grantee",
            (kind, owner, name),
        ).fetchall()
        return [r[0] for r in rows]

    def shared_with(self, kind: str, grantee: str) -> list[tuple[str, str]]:
        """(owner, name) of everything of ``kind`` shared with ``grantee``."""
        rows = self._db.execute(
            "SELECT owner, name FROM shares WHERE kind = ? AND grantee = ? ORDER BY name, owner",
            (kind, grantee),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def visible(self, table: str, columns: str, kind: str, user: str) -> list[tuple[Any, ...]]:
        """The rows of ``table`` (``secrets`` or ``volumes``, keyed by ``name``) that
        ``user`` sees: their own by name, then those shared with them; with no user,
        every row."""
        if not user:
            return self._db.execute(f"SELECT {columns} FROM {table} ORDER BY name").fetchall()
        rows = self._db.execute(
            f"SELECT {columns} FROM {table} WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(user) + 1, user + "/"),
        ).fetchall()
        for owner, name in self.shared_with(kind, user):
            row = self._db.execute(
                f"SELECT {columns} FROM {table} WHERE name = ?", (key(owner, name),)
            ).fetchone()
            if row is not None:
                rows.append(row)
        return rows

    def owner_for(self, kind: str, user: str, name: str, owns: bool) -> str:
        """Whose ``name`` a user means: their own (``owns``: they have one), else the
        one owner who shares a thing of that name with them; the user when none does.

        Raises:
            ConfigError: several users share a thing of that name with the user.
        """
        if owns:
            return user
        rows = self._db.execute(
            "SELECT owner FROM shares WHERE kind = ? AND name = ? AND grantee = ? ORDER BY owner",
            (kind, name, user),
        ).fetchall()
        owners = [r[0] for r in rows]
        if len(owners) > 1:
            raise ConfigError(
                f"{len(owners)} users share a {kind} named {name!r} with you "
                f"({', '.join(owners)}); ask all but one of them to stop sharing it "
                f"(`remotecell {kind} share {name} USER --revoke`)"
            )
        return owners[0] if owners else user


def adopt_unowned(db: sqlite3.Connection, owner: str) -> None:
    """Gives ``owner`` (the data directory's) what was made before there were users:
    jobs with no owner, secrets and volumes whose names are not ``OWNER/NAME``, and
    images no user's job used."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE jobs SET owner = ? WHERE owner = ''", (owner,))
        for table in ("secrets", "volumes"):
            db.execute(
                f"UPDATE {table} SET name = ? || '/' || name WHERE instr(name, '/') = 0",
                (owner,),
            )
        db.execute(
            "INSERT OR IGNORE INTO image_users (image_id, user) SELECT DISTINCT id, ? FROM"
            " images WHERE id NOT IN (SELECT image_id FROM image_users)",
            (owner,),
        )
