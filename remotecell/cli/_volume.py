"""`remotecell volume create | ls | put | get | rm | delete`: volumes and their files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from remotecell.cli._control_plane import connected, token_option, url_option


@click.group()
def volume() -> None:
    """Volumes: file trees that cells mount.

    A cell mounts one with %%remote volumes={"/models": vol}.
    """


@volume.command("create")
@click.argument("name")
@url_option
@token_option
def volume_create(name: str, url: str, token: str) -> None:
    """Make an empty volume NAME."""
    with connected(url, token) as client:
        info = client.create_volume(name)
    click.echo(f"created volume {info.name} ({info.url})")


@volume.command("ls")
@click.argument("name", required=False)
@click.argument("path", required=False, default="/")
@click.option("-r", "--recursive", is_flag=True, help="Every file below PATH.")
@url_option
@token_option
def volume_ls(name: str | None, path: str, recursive: bool, url: str, token: str) -> None:
    """List the volumes, or what volume NAME holds under PATH."""
    from remotecell.client.listing import format_files, format_volumes

    with connected(url, token) as client:
        if name is None:
            click.echo(format_volumes(client.list_volumes()))
        else:
            click.echo(format_files(client.list_volume_files(name, path, recursive)))


@volume.command("share")
@click.argument("name")
@click.argument("user")
@click.option("--revoke", is_flag=True, help="Stop sharing it with USER instead.")
@url_option
@token_option
def volume_share(name: str, user: str, revoke: bool, url: str, token: str) -> None:
    """Share your volume NAME with USER.

    They may then mount, read and write it. A name means the user's own volume first; one shared by several users is refused.
    """
    from remotecell.client.listing import format_shares

    with connected(url, token) as client:
        click.echo(format_shares(name, client.share_volume(name, user, revoke)))


@volume.command("put")
@click.argument("name")
@click.argument("local", type=click.Path(exists=True, path_type=Path))
@click.argument("remote", required=False)
@url_option
@token_option
def volume_put(name: str, local: Path, remote: str | None, url: str, token: str) -> None:
    """Copy LOCAL into volume NAME at REMOTE.

    LOCAL is a file, or a directory and what it holds. REMOTE defaults to /LOCAL's name; a REMOTE ending in / is a directory to put it in.
    """
    import os

    target = remote or "/"
    if target.endswith("/"):
        target += local.resolve().name
    if local.is_dir():
        pairs = []
        for directory, _, files in os.walk(local):
            for file in sorted(files):
                path = Path(directory) / file
                if path.is_file() and not path.is_symlink():
                    relative = path.relative_to(local).as_posix()
                    pairs.append((path, f"{target.rstrip('/')}/{relative}"))
    else:
        pairs = [(local, target)]

    with connected(url, token) as client:
        for path, destination in pairs:
            entry = client.upload_volume_file(name, destination, path)
            click.echo(f"{path} -> {name}:/{entry.path} ({entry.size} bytes)")


@volume.command("get")
@click.argument("name")
@click.argument("remote")
@click.argument("local", required=False, type=click.Path(path_type=Path))
@url_option
@token_option
def volume_get(name: str, remote: str, local: Path | None, url: str, token: str) -> None:
    """Copy REMOTE out of volume NAME to LOCAL.

    REMOTE is a file, or a directory and what it holds. LOCAL defaults to REMOTE's name in the current directory; an existing directory
    receives it; '-' writes a file to standard output.
    """
    from remotecell.contract.volumes import volume_path

    with connected(url, token) as client:
        rel = volume_path(remote, name)
        files = [f for f in client.list_volume_files(name, rel, True) if not f.is_dir]
        single = len(files) == 1 and files[0].path == rel
        if str(local) == "-":
            if not single:
                raise click.ClickException(f"{remote!r} is a directory: give a LOCAL directory")
            client.read_volume_file_into(name, rel, sys.stdout.buffer)
            return
        base = local or Path(rel.rpartition("/")[2] or name)
        if base.is_dir() and (single or local is not None):
            base = base / (rel.rpartition("/")[2] or name)
        for entry in files:
            destination = base if single else base / entry.path[len(rel) :].lstrip("/")
            # A remote store's listing is the store's word: a key with ".." in it must
            # not write outside LOCAL.
            if not single and (
                not entry.path.startswith(rel)
                or not destination.resolve().is_relative_to(base.resolve())
            ):
                raise click.ClickException(
                    f"volume {name!r} lists {entry.path!r}, which is not inside {remote!r}; "
                    "nothing more was written (check the volume store for that key)"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            part = destination.with_name(f".{destination.name}.remotecell-part")
            try:
                with open(part, "wb") as out:
                    client.read_volume_file_into(name, entry.path, out)
                part.replace(destination)
            finally:
                part.unlink(missing_ok=True)
            click.echo(f"{name}:/{entry.path} -> {destination} ({entry.size} bytes)")


@volume.command("rm")
@click.argument("name")
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a directory and what it holds.")
@url_option
@token_option
def volume_rm(name: str, path: str, recursive: bool, url: str, token: str) -> None:
    """Remove PATH from volume NAME."""
    with connected(url, token) as client:
        count = client.remove_volume_path(name, path, recursive)
    click.echo(f"removed {count} file(s) from {name}")


@volume.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@url_option
@token_option
def volume_delete(name: str, yes: bool, url: str, token: str) -> None:
    """Delete volume NAME and every file in it."""
    if not yes:
        click.confirm(f"delete volume {name} and every file in it?", abort=True)
    with connected(url, token) as client:
        count = client.delete_volume(name)
    click.echo(f"deleted volume {name} ({count} file(s))")
