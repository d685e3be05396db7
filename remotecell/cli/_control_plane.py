"""How a command reaches the control plane: ``--url``/``--token``, and ``connected``,
the one place where a remotecell error becomes the command's one-line error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from remotecell.client import Client

url_option = click.option(
    "--url",
    envvar="REMOTECELL_URL",
    default="",
    help="Control plane address (default: the embedded one).",
)
token_option = click.option(
    "--token", envvar="REMOTECELL_TOKEN", default="", help="Control plane token."
)


@contextlib.contextmanager
def one_sentence() -> Iterator[None]:
    """A remotecell error raised in the block ends the command with its sentence
    (``Error: ...`` on standard error, exit status 1) instead of a traceback."""
    from remotecell.contract.errors import RemoteCellError

    try:
        yield
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None


@contextlib.contextmanager
def connected(url: str, token: str) -> Iterator[Client]:
    """A client of the control plane at ``url`` (empty: ``REMOTECELL_URL``, else the
    embedded one) for the block, closed however the block ends. A remotecell error,
    such as no control plane answering or a refused token, ends the command with its
    sentence (see ``one_sentence``).
    """
    from remotecell.client import connect

    with one_sentence():
        client = connect(url, token)
        try:
            yield client
        finally:
            client.close()
