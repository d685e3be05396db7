"""`remotecell token create | ls | revoke`: the users of a control plane and their tokens.

These act on the control plane's data directory (its state database), as the user who
owns it: holding that directory is holding the control plane. A running control plane
sees a new or revoked token at its next call; nothing needs restarting.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The control plane's data directory (default: this user's embedded one).",
)


def _store(data_dir: Path | None):  # type: ignore[no-untyped-def]
    from remotecell.backend.state.credentials import CredentialStore
    from remotecell.client.config import data_dir as default_data_dir

    directory = (data_dir or default_data_dir()).resolve()
    database = directory / "state.sqlite3"
    if not database.exists():
        raise click.ClickException(
            f"{directory} holds no control plane state; start one there first "
            "(`remotecell serve --data-dir DIR`) or pass its --data-dir"
        )
    return CredentialStore(database)


@click.group()
def token() -> None:
    """Users and their tokens: make, list and revoke them."""


@token.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin may also make and revoke tokens.")
@data_dir_option
def token_create(name: str, admin: bool, data_dir: Path | None) -> None:
    """Make a token for user NAME (made if new) and print it, once.

    Give it to that user as REMOTECELL_TOKEN (or in a 0600 file as REMOTECELL_TOKEN_FILE).
    Only its hash is kept: a lost token is revoked and made again.
    """
    from remotecell.contract.errors import ConfigError

    store = _store(data_dir)
    try:
        click.echo(store.create_token(name, admin))
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    finally:
        store.close()


@token.command("ls")
@data_dir_option
def token_ls(data_dir: Path | None) -> None:
    """List the users, whether each is an admin, and how many tokens each has."""
    store = _store(data_dir)
    try:
        users = store.users()
    finally:
        store.close()
    click.echo(f"{'USER':<24} {'ADMIN':<6} {'TOKENS':>6}  CREATED")
    for user in users:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created))
        admin = "yes" if user.admin else "no"
        click.echo(f"{user.name:<24} {admin:<6} {user.tokens:>6}  {created}")


@token.command("revoke")
@click.argument("name")
@data_dir_option
def token_revoke(name: str, data_dir: Path | None) -> None:
    """Revoke every token of user NAME, and the user."""
    from remotecell.contract.errors import ConfigError

    store = _store(data_dir)
    try:
        gone = store.revoke(name)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    finally:
        store.close()
    click.echo(f"revoked {gone} token{'s' if gone != 1 else ''} of {name}")
