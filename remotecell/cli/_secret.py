"""`remotecell secret create | ls | rm`: secrets, stored encrypted by the control plane."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from remotecell.cli._control_plane import connected, one_sentence, token_option, url_option


@click.group()
def secret() -> None:
    """Secrets: encrypted environment variables for cells.

    A cell that names a secret gets its variables.
    """


@secret.command("create")
@click.argument("name")
@click.argument("variables", nargs=-1, metavar="[KEY=VALUE | KEY]...")
@click.option(
    "--from-dotenv",
    "dotenv",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Also read KEY=VALUE lines from this file ('-': standard input).",
)
@click.option("--force", is_flag=True, help="Replace a secret of the same name.")
@url_option
@token_option
def secret_create(
    name: str, variables: tuple[str, ...], dotenv: Path | None, force: bool, url: str, token: str
) -> None:
    """Store secret NAME: the cells that name it get its variables.

    KEY=VALUE gives a value on the command line, where the shell's history keeps it. A
    bare KEY asks for its value without echoing it (from a pipe: one line per KEY);
    --from-dotenv reads a file of KEY=VALUE lines. Only names and keys are ever shown.

    In a notebook: %%remote secrets=[remotecell.Secret.from_name("NAME")]
    """
    from remotecell.client.secret import read_dotenv
    from remotecell.contract.errors import ConfigError
    from remotecell.contract.secrets import check_env, check_name, short_keys

    with one_sentence():  # everything is checked before the control plane is asked
        check_name(name)
        env: dict[str, str] = {}
        if dotenv is not None:
            if str(dotenv) == "-":
                env.update(read_dotenv(text=sys.stdin.read()))
            else:
                env.update(read_dotenv(dotenv))
        for item in variables:
            key, sep, value = item.partition("=")
            if not sep:
                if str(dotenv) == "-":
                    raise ConfigError(
                        f"{key} has no value, and standard input holds the dotenv file; "
                        f"give {key}=VALUE or put it in the file"
                    )
                value = _read_secret_value(key)
            if key in env:
                raise ConfigError(f"{key} is given twice; give each key once")
            env[key] = value
        env = check_env(env, f"secret {name!r}")
    with connected(url, token) as client:
        reply = client.create_secret(name, env, overwrite=force)
    verb = "replaced" if reply.replaced else "created"
    click.echo(f"{verb} secret {name!r} (keys: {', '.join(reply.secret.keys)})")
    short = short_keys(env)
    if short:
        click.echo(
            f"note: {', '.join(short)} {'has a value' if len(short) == 1 else 'have values'} "
            "shorter than 4 characters, which are not masked in cells' output",
            err=True,
        )


def _read_secret_value(key: str) -> str:
    stdin = sys.stdin  # one stream for every key: a fresh wrapper would lose what it buffered
    if stdin.isatty():
        return str(click.prompt(f"{key}", hide_input=True, prompt_suffix=": "))
    line = stdin.readline()
    if not line:
        from remotecell.contract.errors import ConfigError

        raise ConfigError(f"standard input ended before the value of {key}; give one per line")
    return line.rstrip("\r\n")


@secret.command("ls")
@url_option
@token_option
def secret_ls(url: str, token: str) -> None:
    """List secrets: names, keys and when they changed (never values)."""
    import time

    with connected(url, token) as client:
        secrets = client.list_secrets()
    if not secrets:
        click.echo("no secrets; create one with `remotecell secret create NAME KEY=VALUE`")
        return

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    rows = [("NAME", "OWNER", "UPDATED", "CREATED", "KEYS")]
    rows += [
        (s.name, s.owner or "-", when(s.updated), when(s.created), ", ".join(s.keys))
        for s in secrets
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4])


@secret.command("share")
@click.argument("name")
@click.argument("user")
@click.option("--revoke", is_flag=True, help="Stop sharing it with USER instead.")
@url_option
@token_option
def secret_share(name: str, user: str, revoke: bool, url: str, token: str) -> None:
    """Share your secret NAME with USER.

    Their cells may then name it. A name means the user's own secret first; one shared by several users is refused.
    """
    from remotecell.client.listing import format_shares

    with connected(url, token) as client:
        click.echo(format_shares(name, client.share_secret(name, user, revoke)))


@secret.command("rm")
@click.argument("names", nargs=-1, required=True)
@url_option
@token_option
def secret_rm(names: tuple[str, ...], url: str, token: str) -> None:
    """Remove secrets. Jobs that name one and have not started yet will fail."""
    with connected(url, token) as client:
        for name in names:
            client.delete_secret(name)
            click.echo(f"removed secret {name!r}")
