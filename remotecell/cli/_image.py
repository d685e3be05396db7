"""`remotecell image ls | logs | rm | prune`: the control plane's image cache."""

from __future__ import annotations

import click

from remotecell.cli._control_plane import connected, token_option, url_option


@click.group()
def image() -> None:
    """Built images: list them, read build logs, remove them."""


@image.command("ls")
@url_option
@token_option
def image_ls(url: str, token: str) -> None:
    """List built images (and failed or running builds)."""
    from remotecell.client.listing import format_images

    with connected(url, token) as client:
        click.echo(format_images(client.list_images()))


@image.command("logs")
@click.argument("image_id")
@url_option
@token_option
def image_logs(image_id: str, url: str, token: str) -> None:
    """Print an image's build log (a failed build's log is kept)."""
    with connected(url, token) as client:
        for chunk in client.image_log(image_id):
            if chunk.HasField("image") and chunk.builds > 1:
                build = chunk.image
                click.echo(f"== {build.image_id} ({build.builder}, {build.state}) ==")
            click.echo(chunk.text, nl=False)


@image.command("rm")
@click.argument("image_ids", nargs=-1, required=True)
@url_option
@token_option
def image_rm(image_ids: tuple[str, ...], url: str, token: str) -> None:
    """Remove images: what was built, the record and the build log."""
    with connected(url, token) as client:
        for removed in client.remove_images(image_ids):
            click.echo(f"removed {removed.image.image_id[:12]} ({removed.image.builder})")
            if removed.note:
                click.echo(f"  {removed.note}", err=True)


@image.command("prune")
@click.option(
    "--days",
    type=float,
    default=30.0,
    show_default=True,
    help="Remove images not used for this many days.",
)
@url_option
@token_option
def image_prune(days: float, url: str, token: str) -> None:
    """Remove unused images and failed builds.

    Unused: not used for --days. Leftovers of interrupted builds go too.
    """
    with connected(url, token) as client:
        reply = client.prune_images(days)
    for line in reply.removed:
        click.echo(f"removed {line}")
    for note in reply.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{len(reply.removed)} removed")
